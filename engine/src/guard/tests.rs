//! Guard unit tests (in progress).
