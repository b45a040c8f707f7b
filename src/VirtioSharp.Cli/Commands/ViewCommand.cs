using System.CommandLine;
using VirtioSharp.Cli.Explorer;
using VirtioSharp.Diagnostics;

namespace VirtioSharp.Cli.Commands;

/// <summary>`vblk view FILE --html OUT`: turns a ring recording into the one-file HTML explorer.</summary>
public static class ViewCommand
{
    public static Command Create()
    {
        var file = new Argument<string>("FILE") { Description = "A ring recording (from vblk serve --record or vblk demo --record)." };
        var html = new Option<string>("--html") { Description = "Write the explorer page here: one HTML file that opens from disk, nothing fetched.", Required = true };
        var command = new Command("view", """
            Renders a ring recording as a self-contained HTML page: the descriptor table, available and used
            rings with their guest addresses, registers, the interrupt line and each request's bytes, replayed
            step by step with the spec's section for every step. A truncated file, one from a newer vblk or a
            file that is not a recording is refused with one line.
            """) { file, html };
        command.SetAction(parse =>
        {
            var path = parse.GetValue(file)!;
            var output = parse.GetValue(html)!;
            Recording recording;
            try
            {
                recording = RecordingFormat.Read(path);
            }
            catch (RecordingException e)
            {
                throw new CliException(e.Message);
            }
            ExplorerPage.Write(output, ExplorerPage.Render(recording));
            Console.WriteLine($"vblk view: {recording.Events.Count} events from {path} -> {output}");
            return 0;
        });
        return command;
    }
}
