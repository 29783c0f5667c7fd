"""Models: loading base models (local, packaged, GGUF or Hub) safely, adaptation (which parameters train), export."""
