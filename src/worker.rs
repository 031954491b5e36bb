//! Background worker pool (stub: being written).
