namespace VirtioSharp.Diagnostics;

/// <summary>
/// Step-by-step narration of what the rings do (used by `vblk demo`, recordings and the HTML explorer).
/// Callers test <see cref="Active"/> first, so a quiet run formats nothing. Structured code reports a
/// <see cref="RingEvent"/>; the text trace is a view of events (<see cref="RingEvent.Text"/>).
/// </summary>
public interface ITraceSink
{
    bool Active { get; }
    void Step(string actor, string text);

    /// <summary>One event; a sink that only prints shows its text.</summary>
    void Event(RingEvent e) => Step(e.Actor, e.Text);
}
