# loader tests
