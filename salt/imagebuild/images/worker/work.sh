#!/bin/sh
while true; do echo "working on $(hostname)"; sleep 30; done
