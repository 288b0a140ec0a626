"""What a command does around the science: the pipeline, the per-folder lock, sweep folders
and failed jobs."""
