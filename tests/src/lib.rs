//! Helpers for the lab integration tests.
