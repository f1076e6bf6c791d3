"""The detector's commands, one module each with its parser beside its handler: `run`,
`subscribe`, `events`, `compile`, `keys`, `proxy`. The table of every command is
`training/cli.py`, the composition root (training/ may import engine/, not the reverse)."""
