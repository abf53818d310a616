//! Change-event model, traits at the seams (change source, change sink, checkpoint store) and error classes
