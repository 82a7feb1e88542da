"""Plumbing shared by every layer (cli, fleet, core, deploy, sources): where the root is, topic
matching, AWS clients and MQTT settings. It imports no other part of pyengine, so any layer may
use it."""
