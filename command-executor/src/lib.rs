//! Runs commands anywhere: local, via sudo, in Docker containers, over SSH, nested.
