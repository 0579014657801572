"""PRPOExperienceMaker and PRPOTrainer: subclasses of OpenRLHF 0.11.2."""
