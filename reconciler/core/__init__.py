"""The pure core: what each device should run, the plan against what it reports, the
statuses, immutability, the review of a change and the projection of a device's document.

Plain immutable data in and out; no git, HTTP, database or clock. The most tested code.
"""
