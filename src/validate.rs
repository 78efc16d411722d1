//! Type checks for strings that reach a program's argv or the wire.
