"""Pre-training objectives as adapters (issue 21): masking schemes first; training and serving build on them."""
