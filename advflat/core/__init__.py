"""What every package of advflat uses: checks, errors, atomic writes, strict files, statistics."""
