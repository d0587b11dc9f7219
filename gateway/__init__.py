"""SmarterAvatar Gateway: a hybrid-integration proxy between an avatar frontend and an enterprise chat backend."""

__version__ = "0.1.0"
