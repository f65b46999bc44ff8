//! Boot service: BSS-compatible boot parameters, boot-service resources
//! over the same records, iPXE script rendering, the kexec contract and TFTP. Rendering stays pure so every case can be a golden
//! file; the HTTP and TFTP adapters only decode, ask and encode.

pub mod answer;
pub mod base;
pub mod check;
pub mod history;
pub mod params;
pub mod ra;
pub mod script;
pub mod select;
pub mod service;
pub mod steps;
pub mod tftp;
