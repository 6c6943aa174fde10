"""Schemas several test modules share."""

from __future__ import annotations

#: nested groups, folders nested by ``parent`` arrows, documents in folders, and
#: wildcards on a folder's viewers (SpiceDB refuses a wildcard reached through a nested
#: group)
FOLDERS = """
definition user {}

definition group {
    relation member: user | group#member
}

definition folder {
    relation parent: folder
    relation viewer: user | user:* | group#member
    permission view = viewer + parent->view
}

definition doc {
    relation parent: folder
    relation viewer: user | group#member
    permission view = viewer + parent->view
}
"""
