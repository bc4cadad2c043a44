"""The accuracy suite: what the project bills, checked against the CF simulator's oracle."""
