"""Models and talking to them: registry + built-in catalogue, backends, prompts, generate, parse."""
