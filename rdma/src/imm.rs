//! The 32-bit immediate value every RDMA write of this transport carries:
//! what the write is, and a number that says which.
//!
//! | bits 31..30 | kind   | bits 29..0                                     |
//! |-------------|--------|------------------------------------------------|
//! | 0           | data   | message number on the channel, modulo 2^30     |
//! | 1           | credit | messages the receiver has released, modulo 2^30 |
//! | 2           | abort  | bytes of the abort frame written to the abort slot |
//! | 3           | control | bits 29..28: 0 bye (the sender is closing its transport), 1 probe, 2 state; bits 27..0: the probe's number (low 28 bits) |
//!
//! A probe asks what the receiver's rank is doing; the state answers it
//! with the TCP transport's 64-byte state frame written to the prober's
//! state line (the full probe number is in the frame).
//!
//! Numbers on a channel only grow, and never by more than the receive slots
//! per step, so the low 30 bits and the last full number known give back the
//! full one ([`widen`]).

/// What an immediate value says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Imm {
    Data(u32),
    Credit(u32),
    Abort(u32),
    Bye,
    /// A probe; the low 28 bits of its number.
    Probe(u32),
    /// The answer to a probe is in the state line.
    State,
    /// A control value with an unknown sub-kind.
    Unknown(u32),
}

const VALUE: u32 = (1 << 30) - 1;
/// The probe number's bits in a control value.
pub const PROBE_BITS: u32 = (1 << 28) - 1;

impl Imm {
    pub fn encode(self) -> u32 {
        match self {
            Imm::Data(v) => v & VALUE,
            Imm::Credit(v) => 1 << 30 | (v & VALUE),
            Imm::Abort(v) => 2 << 30 | (v & VALUE),
            Imm::Bye => 3 << 30,
            Imm::Probe(n) => 3 << 30 | 1 << 28 | (n & PROBE_BITS),
            Imm::State => 3 << 30 | 2 << 28,
            Imm::Unknown(v) => 3 << 30 | (v & VALUE),
        }
    }

    pub fn decode(imm: u32) -> Imm {
        let v = imm & VALUE;
        match imm >> 30 {
            0 => Imm::Data(v),
            1 => Imm::Credit(v),
            2 => Imm::Abort(v),
            _ => match (v >> 28, v & PROBE_BITS) {
                (0, 0) => Imm::Bye,
                (1, n) => Imm::Probe(n),
                (2, 0) => Imm::State,
                _ => Imm::Unknown(v),
            },
        }
    }

    /// The low 30 bits of a full channel number.
    pub fn low(n: u64) -> u32 {
        (n & u64::from(VALUE)) as u32
    }
}

/// The full number whose low 30 bits are `low`, at or after `known` and
/// less than 2^30 past it.
pub fn widen(low: u32, known: u64) -> u64 {
    let ahead = u64::from(low.wrapping_sub(Imm::low(known)) & VALUE);
    known + ahead
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kinds_round_trip() {
        let every = [
            Imm::Data(0),
            Imm::Data(VALUE),
            Imm::Credit(7),
            Imm::Abort(2112),
            Imm::Bye,
            Imm::Probe(0),
            Imm::Probe(PROBE_BITS),
            Imm::State,
            Imm::Unknown(3 << 28),
            Imm::Unknown(2 << 28 | 5),
        ];
        for imm in every {
            assert_eq!(Imm::decode(imm.encode()), imm);
        }
    }

    proptest! {
        #[test]
        fn widening_recovers_the_full_number(known in 0u64..1 << 40, step in 0u64..1 << 29) {
            let n = known + step;
            prop_assert_eq!(widen(Imm::low(n), known), n);
        }
    }
}
