"""Test doubles shared by the engine tests: a scripted model server and fake agent CLIs."""
