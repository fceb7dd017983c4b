# redis tests
