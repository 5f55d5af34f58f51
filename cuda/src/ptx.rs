//! The kernels' PTX, generated from ptx/kernels by ptx/tools/build-ptx.sh
//! (committed, so building needs no CUDA tools) and embedded here.

/// A GPU architecture the PTX was generated for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Sm80,
    Sm90,
}

impl Arch {
    /// The PTX to load on a device of compute capability `major.minor`, if any.
    pub fn for_capability(major: i32, _minor: i32) -> Option<Arch> {
        match major {
            i32::MIN..=7 => None,
            8 => Some(Arch::Sm80),
            _ => Some(Arch::Sm90),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Sm80 => "sm_80",
            Arch::Sm90 => "sm_90",
        }
    }
}

/// One kernel file's PTX for each architecture.
#[derive(Debug)]
pub struct Module {
    pub name: &'static str,
    sm80: &'static str,
    sm90: &'static str,
}

impl Module {
    pub fn ptx(&self, arch: Arch) -> &'static str {
        match arch {
            Arch::Sm80 => self.sm80,
            Arch::Sm90 => self.sm90,
        }
    }
}

macro_rules! module {
    ($name:literal) => {
        Module {
            name: $name,
            sm80: include_str!(concat!("../../ptx/gen/sm_80/", $name, ".ptx")),
            sm90: include_str!(concat!("../../ptx/gen/sm_90/", $name, ".ptx")),
        }
    };
}

/// Every module, one per file in ptx/kernels.
pub static MODULES: [Module; 7] = [
    module!("activation"),
    module!("adam"),
    module!("reduce"),
    module!("matmul_f32"),
    module!("matmul_bf16"),
    module!("dense"),
    module!("signal"),
];

pub fn module(name: &str) -> Option<&'static Module> {
    MODULES.iter().find(|m| m.name == name)
}

/// The names of the `.entry` functions in a PTX text.
pub fn entries(ptx: &str) -> Vec<&str> {
    ptx.lines()
        .filter_map(|l| {
            l.trim_start().strip_prefix(".visible .entry ").or_else(|| l.trim_start().strip_prefix(".entry "))
        })
        .map(|rest| rest.split(['(', ' ']).next().unwrap_or("").trim())
        .collect()
}

/// The `.version major.minor` of a PTX text.
pub fn version(ptx: &str) -> Option<(u32, u32)> {
    let line = ptx.lines().find_map(|l| l.trim().strip_prefix(".version "))?;
    let (major, minor) = line.trim().split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The `.target` of a PTX text.
pub fn target(ptx: &str) -> Option<&str> {
    ptx.lines().find_map(|l| l.trim().strip_prefix(".target ")).map(str::trim)
}
