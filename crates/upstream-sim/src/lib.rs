//! upstream-sim (work in progress).
