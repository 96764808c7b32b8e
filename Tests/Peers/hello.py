print("HELLO 42")
