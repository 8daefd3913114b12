pub mod doctor;
pub mod host;
pub mod install;
pub mod run;
pub mod smi;
