//! Whether a peer is gone, and why: set once (the first reason stays), read
//! with one load on every wait's look.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::lock;

/// See the module docs.
#[derive(Default)]
pub struct Gone {
    gone: AtomicBool,
    why: Mutex<Option<String>>,
}

impl Gone {
    /// Why the peer is gone, once it is (`default` when no reason was kept).
    #[inline]
    pub fn get(&self, default: &str) -> Option<String> {
        if !self.gone.load(Ordering::Acquire) {
            return None;
        }
        Some(lock(&self.why).clone().unwrap_or_else(|| default.to_string()))
    }

    /// Keeps `why` as the reason unless one is kept already, without
    /// marking the peer gone (a reason seen before the peer is known gone).
    pub fn note(&self, why: String) {
        let mut w = lock(&self.why);
        if w.is_none() {
            *w = Some(why);
        }
    }

    /// Marks the peer gone, keeping the first reason; true the first time.
    pub fn set(&self, why: String) -> bool {
        self.note(why);
        !self.gone.swap(true, Ordering::AcqRel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_stays() {
        let g = Gone::default();
        assert_eq!(g.get("x"), None);
        g.note("first".into());
        assert_eq!(g.get("x"), None, "a noted reason does not make the peer gone");
        assert!(g.set("second".into()));
        assert!(!g.set("third".into()));
        assert_eq!(g.get("x").as_deref(), Some("first"));
        let h = Gone::default();
        h.set("only".into());
        assert_eq!(h.get("x").as_deref(), Some("only"));
    }
}
