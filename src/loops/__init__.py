"""loops: run AI coding agents unattended, durably and honestly."""
