pub mod real_parts;
pub mod rocklet;
