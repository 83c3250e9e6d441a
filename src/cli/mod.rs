//! Client commands: `ferroserve jobs …` talks to a running server over REST.

pub mod jobs;
