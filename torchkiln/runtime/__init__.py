"""What stages do when they run (imports torch). Stage kinds import these inside run()."""
