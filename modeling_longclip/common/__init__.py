"""The shared low layer: what several rooms need (errors, atomic writes, image opening, caption tables, folder
validation, the command-line rule). It imports only the payload and third-party libraries, never another room."""
