"""Dataset writers and readers shared by every study."""
