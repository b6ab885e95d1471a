"""The application (floor 3): the build pipeline (export, then passes, then parity, then the
atomic artifact), parity (the one place with torch and ONNX Runtime together), comparison
and reports, the Triton export and the command line. Imports every floor below."""
