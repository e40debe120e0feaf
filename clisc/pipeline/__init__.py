"""The thin pipeline tying the Figure-1 stages together, its settings, profiles and method registry."""
