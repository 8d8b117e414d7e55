//! Compute units (`ENGINE:DEVICE[OPTIONS]`), chains of them, and the chain aliases `ALL`, `CPU_AND_GPU`,
//! `CPU_AND_NE`, `CPU_ONLY` (named after Core ML's `MLComputeUnits`).
//!
//! A [`Unit`] is one way to run a model. A [`Chain`] is an ordered list of units: the first that loads, warms up
//! and stays healthy serves, the rest are fallbacks. Parsing is strict: an unknown unit is an error listing the
//! valid ones, never a silent default.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::UnitError;

/// The engine half of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// ONNX Runtime (crate `ort`).
    Ort,
    /// candle, the pure-Rust engine.
    Candle,
}

impl EngineKind {
    /// The prefix used in unit strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ort => "ort",
            Self::Candle => "candle",
        }
    }
}

/// The `MLComputeUnits` value of a CoreML unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CoreMlUnits {
    /// CPU, GPU and Neural Engine.
    All,
    /// CPU and GPU.
    CpuAndGpu,
    /// CPU and Neural Engine.
    CpuAndNe,
    /// CPU only.
    CpuOnly,
}

impl CoreMlUnits {
    /// The spelling used in unit strings and chain aliases (Core ML's `MLComputeUnits` names).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::All => "ALL",
            Self::CpuAndGpu => "CPU_AND_GPU",
            Self::CpuAndNe => "CPU_AND_NE",
            Self::CpuOnly => "CPU_ONLY",
        }
    }

    const VALUES: [CoreMlUnits; 4] = [Self::All, Self::CpuAndGpu, Self::CpuAndNe, Self::CpuOnly];
}

/// The device half of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Device {
    /// The host CPU.
    Cpu,
    /// NVIDIA CUDA.
    Cuda,
    /// NVIDIA TensorRT (ONNX Runtime only).
    TensorRt,
    /// AMD ROCm (ONNX Runtime only).
    Rocm,
    /// Intel OpenVINO (ONNX Runtime only).
    OpenVino,
    /// DirectML on Windows (ONNX Runtime only).
    DirectMl,
    /// Apple CoreML with the given compute units (ONNX Runtime only).
    CoreMl(CoreMlUnits),
    /// Apple Metal (candle only).
    Metal,
}

/// One way to run a model: an engine on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Unit {
    /// Which engine.
    pub engine: EngineKind,
    /// Which device.
    pub device: Device,
}

impl Unit {
    /// `ort:cpu`.
    pub const ORT_CPU: Unit = Unit { engine: EngineKind::Ort, device: Device::Cpu };
    /// `candle:cpu`.
    pub const CANDLE_CPU: Unit = Unit { engine: EngineKind::Candle, device: Device::Cpu };

    /// Every unit bulkhead knows, in a stable order (whether or not this build or machine can run it).
    pub fn all() -> Vec<Unit> {
        let mut units = vec![];
        for device in [Device::Cpu, Device::Cuda, Device::TensorRt, Device::Rocm, Device::OpenVino, Device::DirectMl] {
            units.push(Unit { engine: EngineKind::Ort, device });
        }
        for cu in CoreMlUnits::VALUES {
            units.push(Unit { engine: EngineKind::Ort, device: Device::CoreMl(cu) });
        }
        for device in [Device::Cpu, Device::Cuda, Device::Metal] {
            units.push(Unit { engine: EngineKind::Candle, device });
        }
        units
    }

    /// True when the unit computes on the host CPU only.
    pub fn is_cpu(&self) -> bool {
        matches!(self.device, Device::Cpu | Device::CoreMl(CoreMlUnits::CpuOnly))
    }

    fn valid_list() -> String {
        Unit::all().iter().map(|u| u.to_string()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let device = match self.device {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::TensorRt => "tensorrt",
            Device::Rocm => "rocm",
            Device::OpenVino => "openvino",
            Device::DirectMl => "directml",
            Device::Metal => "metal",
            Device::CoreMl(cu) => return write!(f, "{}:coreml[{}]", self.engine.as_str(), cu.as_str()),
        };
        write!(f, "{}:{}", self.engine.as_str(), device)
    }
}

impl FromStr for Unit {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let input = s.trim();
        let unknown = || UnitError::Unknown { input: input.to_string(), valid: Unit::valid_list() };
        let (engine, rest) = input.split_once(':').ok_or_else(unknown)?;
        let engine = match engine.to_ascii_lowercase().as_str() {
            "ort" => EngineKind::Ort,
            "candle" => EngineKind::Candle,
            _ => return Err(unknown()),
        };
        let (device, options) = match rest.split_once('[') {
            Some((d, o)) => (d, Some(o.strip_suffix(']').ok_or_else(unknown)?)),
            None => (rest, None),
        };
        let device = match (device.to_ascii_lowercase().as_str(), options) {
            ("cpu", None) => Device::Cpu,
            ("cuda", None) => Device::Cuda,
            ("tensorrt", None) => Device::TensorRt,
            ("rocm", None) => Device::Rocm,
            ("openvino", None) => Device::OpenVino,
            ("directml", None) => Device::DirectMl,
            ("metal", None) => Device::Metal,
            ("coreml", None) => Device::CoreMl(CoreMlUnits::All),
            ("coreml", Some(o)) => Device::CoreMl(
                CoreMlUnits::VALUES
                    .into_iter()
                    .find(|cu| cu.as_str().eq_ignore_ascii_case(o.trim()))
                    .ok_or_else(unknown)?,
            ),
            _ => return Err(unknown()),
        };
        let unit = Unit { engine, device };
        if Unit::all().contains(&unit) {
            Ok(unit)
        } else {
            Err(unknown())
        }
    }
}

impl TryFrom<String> for Unit {
    type Error = UnitError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Unit> for String {
    fn from(u: Unit) -> String {
        u.to_string()
    }
}

/// What the aliases expand to depends on the machine: which OS, which accelerators are visible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    /// macOS (CoreML and Metal exist).
    pub macos: bool,
    /// Windows (DirectML exists).
    pub windows: bool,
    /// An NVIDIA driver is visible.
    pub nvidia: bool,
    /// An AMD ROCm device is visible.
    pub rocm: bool,
}

impl Platform {
    /// Inspects this machine (cheap: a few file-existence checks).
    pub fn detect() -> Platform {
        let exists = |p: &str| std::path::Path::new(p).exists();
        Platform {
            macos: cfg!(target_os = "macos"),
            windows: cfg!(target_os = "windows"),
            nvidia: exists("/proc/driver/nvidia/version") || exists("/dev/nvidiactl"),
            rocm: exists("/dev/kfd"),
        }
    }

    /// The units of this platform's accelerators (GPU or Neural Engine) for an alias, best first.
    fn accelerators(&self, alias: &str) -> Vec<Unit> {
        let ort = |device| Unit { engine: EngineKind::Ort, device };
        let candle = |device| Unit { engine: EngineKind::Candle, device };
        let mut units = vec![];
        if self.macos {
            match alias {
                "ALL" => units.extend([ort(Device::CoreMl(CoreMlUnits::All)), candle(Device::Metal)]),
                "CPU_AND_GPU" => units.extend([ort(Device::CoreMl(CoreMlUnits::CpuAndGpu)), candle(Device::Metal)]),
                "CPU_AND_NE" => units.push(ort(Device::CoreMl(CoreMlUnits::CpuAndNe))),
                _ => {}
            }
            return units;
        }
        if matches!(alias, "ALL" | "CPU_AND_GPU") {
            if self.nvidia {
                units.extend([ort(Device::Cuda), candle(Device::Cuda)]);
            }
            if self.rocm {
                units.push(ort(Device::Rocm));
            }
            if self.windows {
                units.push(ort(Device::DirectMl));
            }
        }
        units
    }
}

/// An ordered, duplicate-free list of units: the first that works serves, the others are fallbacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chain {
    units: Vec<Unit>,
}

impl Chain {
    /// The default chain specification.
    pub const DEFAULT: &'static str = "ALL";

    /// Parses a comma-separated chain of units and aliases, expanding aliases for `platform`.
    pub fn parse(spec: &str, platform: &Platform) -> Result<Chain, UnitError> {
        let mut units: Vec<Unit> = vec![];
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let upper = part.to_ascii_uppercase();
            let expanded = match upper.as_str() {
                "ALL" | "CPU_AND_GPU" | "CPU_AND_NE" | "CPU_ONLY" => {
                    let mut v = platform.accelerators(&upper);
                    v.extend([Unit::ORT_CPU, Unit::CANDLE_CPU]);
                    v
                }
                _ => vec![part.parse()?],
            };
            for u in expanded {
                if !units.contains(&u) {
                    units.push(u);
                }
            }
        }
        if units.is_empty() {
            return Err(UnitError::Empty);
        }
        Ok(Chain { units })
    }

    /// Builds a chain from units (duplicates removed, order kept).
    pub fn from_units(list: impl IntoIterator<Item = Unit>) -> Result<Chain, UnitError> {
        let mut units: Vec<Unit> = vec![];
        for u in list {
            if !units.contains(&u) {
                units.push(u);
            }
        }
        if units.is_empty() {
            return Err(UnitError::Empty);
        }
        Ok(Chain { units })
    }

    /// The units, first preferred.
    pub fn units(&self) -> &[Unit] {
        &self.units
    }
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s: Vec<String> = self.units.iter().map(|u| u.to_string()).collect();
        f.write_str(&s.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX_CPU: Platform = Platform { macos: false, windows: false, nvidia: false, rocm: false };

    #[test]
    fn every_known_unit_round_trips() {
        for u in Unit::all() {
            assert_eq!(u.to_string().parse::<Unit>().unwrap(), u);
        }
        assert_eq!(Unit::all().len(), 13);
    }

    #[test]
    fn parses_options_and_case() {
        let u: Unit = "ORT:CoreML[cpu_and_ne]".parse().unwrap();
        assert_eq!(u.to_string(), "ort:coreml[CPU_AND_NE]");
        assert_eq!("ort:coreml".parse::<Unit>().unwrap().to_string(), "ort:coreml[ALL]");
    }

    #[test]
    fn unknown_units_list_the_valid_ones() {
        for bad in ["bogus", "ort:gpu", "candle:tensorrt", "ort:coreml[FAST]", "ort:cpu[x]", "ort:coreml[ALL"] {
            let err = bad.parse::<Unit>().unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{bad}`")), "{msg}");
            assert!(msg.contains("ort:cpu") && msg.contains("candle:metal") && msg.contains("CPU_AND_NE"), "{msg}");
        }
    }

    #[test]
    fn aliases_on_linux_without_gpu_end_in_cpu_units() {
        for alias in ["ALL", "all", "CPU_AND_GPU", "cpu_and_ne", "CPU_ONLY"] {
            let chain = Chain::parse(alias, &LINUX_CPU).unwrap();
            assert_eq!(chain.to_string(), "ort:cpu,candle:cpu", "{alias}");
        }
    }

    #[test]
    fn aliases_with_gpus_and_on_macos() {
        let nvidia = Platform { nvidia: true, ..LINUX_CPU };
        assert_eq!(Chain::parse("ALL", &nvidia).unwrap().to_string(), "ort:cuda,candle:cuda,ort:cpu,candle:cpu");
        assert_eq!(Chain::parse("CPU_ONLY", &nvidia).unwrap().to_string(), "ort:cpu,candle:cpu");
        let mac = Platform { macos: true, ..LINUX_CPU };
        assert_eq!(Chain::parse("CPU_AND_NE", &mac).unwrap().to_string(), "ort:coreml[CPU_AND_NE],ort:cpu,candle:cpu");
        assert_eq!(Chain::parse("ALL", &mac).unwrap().to_string(), "ort:coreml[ALL],candle:metal,ort:cpu,candle:cpu");
    }

    #[test]
    fn chains_mix_units_and_aliases_without_duplicates() {
        let chain = Chain::parse("ort:cuda, ort:cpu ,ALL", &LINUX_CPU).unwrap();
        assert_eq!(chain.to_string(), "ort:cuda,ort:cpu,candle:cpu");
        assert_eq!(Chain::parse(" , ", &LINUX_CPU), Err(UnitError::Empty));
        assert!(matches!(Chain::parse("ort:cpu,bogus", &LINUX_CPU), Err(UnitError::Unknown { .. })));
    }

    #[test]
    fn serde_uses_the_unit_string() {
        let json = serde_json::to_string(&Unit::ORT_CPU).unwrap();
        assert_eq!(json, "\"ort:cpu\"");
        let u: Unit = serde_json::from_str("\"ort:coreml[CPU_ONLY]\"").unwrap();
        assert!(u.is_cpu());
        assert!(serde_json::from_str::<Unit>("\"ort:nope\"").is_err());
    }
}
