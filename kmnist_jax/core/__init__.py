"""What every layer uses: errors, atomic files, the console, devices and
processes, environment checks, PRNG streams and metrics."""
