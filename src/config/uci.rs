//! UCI grammar.
