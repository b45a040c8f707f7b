namespace VirtioSharp.Cli.Commands;

/// <summary>A mistake in how vblk serve was called: one line on standard error and exit code 2.</summary>
internal sealed class UsageException(string message) : Exception(message);
