namespace VirtioSharp.Diagnostics;

/// <summary>
/// Step-by-step narration of a request in the spec's words (used by `vblk demo`).
/// Callers test <see cref="Active"/> first, so a quiet run formats nothing.
/// </summary>
public interface ITraceSink
{
    bool Active { get; }
    void Step(string actor, string text);
}
