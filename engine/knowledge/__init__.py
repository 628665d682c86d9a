"""Knowledge from a teacher: patterns, sampling, distillation (rules, thoughts), records, sets, ICL.

formats.py is the one table of knowledge formats; everything that lists formats reads it.
"""
