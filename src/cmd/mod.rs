pub mod bench;
pub mod doctor;
pub mod host;
pub mod install;
pub mod isolate;
pub mod libs;
pub mod run;
pub mod smi;
