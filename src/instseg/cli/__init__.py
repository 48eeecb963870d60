"""`instseg <command>`: thin entry points (parse, build, call)."""
