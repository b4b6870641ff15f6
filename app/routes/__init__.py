"""One router per resource; each HTML route has a `.json` twin registered before it."""
