"""The one report stack: finished runs read and verified once, published numbers, shared
figures and sections; each study adds its own result sections (`StudyAdapter.report`)."""
