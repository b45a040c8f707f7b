using VirtioSharp.Diagnostics;

namespace VirtioSharp.Cli;

/// <summary>Prints the trace of requests to standard output, one step per line, numbered.</summary>
public sealed class ConsoleTrace(bool active) : ITraceSink
{
    private readonly Lock _lock = new();
    private int _step;

    public bool Active { get; set; } = active;

    public void Step(string actor, string text)
    {
        lock (_lock)
        {
            _step++;
            var color = actor == "driver" ? ConsoleColor.Cyan : ConsoleColor.Yellow;
            if (Console.IsOutputRedirected)
                Console.WriteLine($"{_step,3}  [{actor}] {text}");
            else
            {
                Console.Write($"{_step,3}  ");
                Console.ForegroundColor = color;
                Console.Write($"[{actor}]");
                Console.ResetColor();
                Console.WriteLine($" {text}");
            }
        }
    }
}
