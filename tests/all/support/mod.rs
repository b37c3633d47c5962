pub mod rocklet;
