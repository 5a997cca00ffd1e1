//! Thread pools. (Being written.)
