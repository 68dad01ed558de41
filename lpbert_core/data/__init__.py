"""Data stages (paper section 4.1's benchmarks): download -> join_text -> tokenize."""
