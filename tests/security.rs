//! Hostile input: the identity-path corpus and the classifier properties.
