"""The example pipeline that ships in the wheel: `train` (main) and `diag`, served by
`flexlock-prefect demo` and `serve` (see `flexlock_prefect.serving.example_pipeline`)."""
