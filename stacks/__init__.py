"""Infrastructure as CDK constructs: one construct per capability, one file each; stacks only compose."""
