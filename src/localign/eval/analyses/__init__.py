"""What the analysis chapters (05-08) compute from run folders: ablation tables, representation
statistics, weight maps and grounding examples, each as tidy data frames for ``localign.viz``."""
