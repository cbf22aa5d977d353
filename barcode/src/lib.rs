//! Scanbridge barcode helpers, pure and free of I/O.
//!
//! - [`aim`]: the AIM symbology identifier (`]C1`, `]E0`, `]d2`, ...) that scanners may put in
//!   front of the data, and what it says about the symbology.
//! - [`gs1`]: GS1 element strings (GS1-128, GS1 DataMatrix, GS1 QR, GS1 DataBar, GS1 DotCode):
//!   application identifiers with the predefined-length table, FNC1 given as ASCII 29 (GS),
//!   check digits on GTIN and SSCC, YYMMDD dates, and measures with their decimal places.
//!
//! Nothing here panics on any input (property-tested); errors are typed and say what to fix.

pub mod aim;
pub mod gs1;
